"""The typed state the control loops share (statuses defined once); imports nothing of mlray but the spec."""
