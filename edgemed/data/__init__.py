"""Built-in data: synthetic DICOM for the demo, tests and examples."""
