"""HTTP routes: parse, build one command or query, call the service once, render."""
