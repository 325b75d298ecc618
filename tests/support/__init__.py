"""What the tests and the scripts under scripts/ share. No test module (tests/test_*.py) imports another, and no
script imports one: what two of them need lives here (tests/test_layout.py holds the line).

commands         the checkout, the installed command and its one-line error contract, a clean env, a free port
training         the tiny training config, its torchrun command line, resume checks, MLflow look-ups, weights
models           tiny models and checkpoints: a fixed-output watch model, stand-ins for released models
mosquitto        a throwaway mosquitto broker on loopback and a subscriber that records what it receives
videos           small real test videos whose frames show their own index
fault_servers    servers on 127.0.0.1 that fail the way networks do (stalling streams, a hanging webhook)
netns            test hosts in Linux network namespaces joined by shaped veth links
review_fixtures  alerts in a real store and a LiveView with fixed cameras, for the review app's tests
slurm_cluster    a throwaway Slurm (munged, slurmctld, slurmd) in a temp dir, on this machine or on netns hosts
"""
