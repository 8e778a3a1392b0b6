"""The project layer: a project's store, the dataset sources read into it, its round settings and its background jobs."""
