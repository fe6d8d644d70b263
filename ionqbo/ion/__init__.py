"""The ION side: client-credentials auth, GraphQL over HTTP, Relay paging, typed records."""
