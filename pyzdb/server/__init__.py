"""The server side: message handling, the request loops, the read queue device."""
