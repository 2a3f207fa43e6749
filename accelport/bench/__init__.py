"""``accelport bench``: every runtime x dtype x batch size, parity-checked, timed side by side, and the pick."""
