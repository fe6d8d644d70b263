"""The QBO side: OAuth connect and token store, the REST client, typed faults, client-side pacing."""
