"""The utilities every layer uses: errors, validation of input, default paths, the console."""
