"""Reading and writing files: codecs, encodings, field values, the columnar path."""
