"""Endpoints: SFTP against real servers, and faults on the way to them."""
