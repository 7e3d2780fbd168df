"""Where configuration comes from. Sources only produce values; the reloader puts them in service."""
