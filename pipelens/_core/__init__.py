"""The core room: the current step, steps and runs, ``@step``, capture, settings, errors.

It imports only the standard library, wrapt, msgspec and ``pipelens.events``; every other room
builds on it. Its modules are imported by their own names; this package re-exports nothing.
"""
