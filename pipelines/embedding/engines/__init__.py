"""Engines that run an embedding job's encoding somewhere other than this process."""
