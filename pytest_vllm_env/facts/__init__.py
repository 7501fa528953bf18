"""Facts about an env, a GPU arch, a lock or a binary's linkage, from what the readers read."""
