"""The `fightwatch` commands, one module each: `add_arguments(parser)` builds its parser, `run(args)` runs it, and
the work behind it sits beside them (cluster/cli.py imports only the module of the command being run).

    demo.py       the whole product on generated videos: prepare, train, score a held-out timeline
    prepare.py    the clip manifest (AVA, a folder per class, generated) and the clips in the store, on Ray Data
    train.py      fine-tuning on the prepared clips with MLflow tracking; resumes; DDP when started as ranks
    score.py      videos in 16-frame segments: output.json, alerts, annotated videos; locally or on Ray
    evaluate.py   a model measured on labelled or untrimmed videos, logged to MLflow
    quantize.py   an int8 model of a checkpoint, kept only when its measured accuracy drop is within the bound
    summarise.py  the folds of a k-fold pooled from MLflow's evaluation runs
    plan.py       which CPUs each DDP rank of a node runs on
    watch.py      live cameras through one model, alerts to the sinks and the store
    review.py     the review web app, or the export of reviewed clips
    args.py       the options several commands share (config and overrides, alert policy, precision, token)
"""
