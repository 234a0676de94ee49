"""The web app: intake of deliveries, job and fleet pages, metrics, and the gunicorn worker class.
"""
