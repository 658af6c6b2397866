"""One module per `pjudge` verb."""
