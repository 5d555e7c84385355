"""Running the service's parts as local processes (a private redis-server, the API), for the
demo and for the tests. Nothing here is used by the serving or training code."""
