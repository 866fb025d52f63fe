"""Rendering: what a person opens (map.html/map.png, report.html) and what a program reads (clusters.json).

Nothing here computes clusters, layouts or keywords; it draws what the stages computed.
"""
