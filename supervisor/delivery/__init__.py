"""Results out: the callback and its retries, progress events, signing, and the spool on disk."""
