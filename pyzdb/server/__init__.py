"""The server side: message handling, the REP loops, the queue devices."""
