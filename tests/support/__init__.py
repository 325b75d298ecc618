"""What the tests and the scripts under scripts/ share. No module imports a test module (tests/test_*.py): what two
of them need lives here, the only part of tests/ that scripts import (tests/test_layout.py holds both lines).

commands         the checkout, the installed command and its one-line error contract, a clean env, a free port
training         the tiny training config, `fightwatch`/torchrun that train it, resume checks, MLflow look-ups
models           tiny models and checkpoints: the score/watch model, a fixed-output one, released-model stand-ins
mosquitto        a throwaway mosquitto broker on loopback and a subscriber that records what it receives
videos           small real test videos: frames that show their index, noise, a gray gradient with sound
watch            `fightwatch watch` in-process, its videos' frame rate and the fixed-output models fixture
trunk_cache      the trunk cache tests' tiny split model, a prepared run dir's clip sets, a TrunkCache on them
topology         the folder of lscpu captures the topology and placement tests read
fault_servers    servers on 127.0.0.1 that fail the way networks do (stalling streams, a hanging webhook)
netns            test hosts in Linux network namespaces joined by shaped veth links
review_fixtures  alerts in a real store and a LiveView with fixed cameras, for the review app's tests
slurm_cluster    a throwaway Slurm (munged, slurmctld, slurmd) in a temp dir, on this machine or on netns hosts
"""
