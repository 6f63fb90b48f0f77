"""The web app (FastAPI): public files now; the desk and the ops dashboard grow here."""
