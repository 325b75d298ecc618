"""People looking at alerts: `fightwatch review` and `fightwatch watch --ui`.

    app.py        the review web app (FastAPI): the alert queue, an alert's clip and windows, the verdicts
    ui/           its page: two HTML files, one script, one style sheet (no build step, nothing from a CDN)
    live_view.py  what the app shows of the cameras right now (watch's monitor, or the store's last status)
    export.py     reviewed clips copied into a folder per class, for retraining
    view_clips.py a false alarm's motion regions as training clips of their own (the export writes them)
"""
