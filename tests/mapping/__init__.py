"""Mappings: rules, expressions, groups, steps, and the pipeline that runs them."""
