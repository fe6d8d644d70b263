"""Built-in ION and QBO emulators: real HTTP on 127.0.0.1, behaving as the reference documents say."""
