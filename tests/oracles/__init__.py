"""Independent reference implementations that tests compare production code against."""
