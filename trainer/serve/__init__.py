"""Serving a trained model, in three parts by job:

    runtime/   turning video into fight probabilities: windows, scoring files, cameras and their decode threads,
               the watch loop, snapshots and annotation
    alerting/  turning probabilities into alerts and sending them: the policy (where the threshold is applied),
               the sinks, the alert store and its retention
    review/    people looking at alerts: the review web app, its page, the live camera view, the export of reviewed
               clips for retraining
"""
