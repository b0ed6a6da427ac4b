//! A fake Convox rack.
