"""The read room: the SQL queries that pages and API share, and the shapes they answer with."""
