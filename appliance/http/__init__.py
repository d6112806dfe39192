"""The HTTP surface, run in each server process.

The app factory, middleware, request edge and the routes.
"""
