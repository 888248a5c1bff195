"""The HTTP surface: routes, auth, the multipart form and its judging, errors as JSON, the served schema."""
