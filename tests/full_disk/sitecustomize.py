"""Put this folder on a child process's PYTHONPATH with $FULL_DISK_FROM_STEP set, and each
orbax checkpoint save at that step or later fails as it fails on a full disk: with the
ValueError orbax raises for tensorstore's error, its text as a full tmpfs gave it
(experiments/disk_full/), before anything is written."""

import os

FROM_STEP = os.environ.get("FULL_DISK_FROM_STEP")

if FROM_STEP:
    import orbax.checkpoint as ocp

    real_save = ocp.CheckpointManager.save

    def full_disk_save(self, step, *args, **kwargs):
        if step >= int(FROM_STEP):
            raise ValueError(
                f'RESOURCE_EXHAUSTED: Error writing local file "{self.directory}/{step}.orbax-'
                'checkpoint-tmp/state.orbax-checkpoint-tmp/_sharding": Failed writing: '
                f'"{self.directory}/{step}.orbax-checkpoint-tmp/state.orbax-checkpoint-tmp/'
                '_sharding.__lock": Failed to write 1930 bytes to file 7: No space left on '
                "device [os_error_code='28']"
            )
        return real_save(self, step, *args, **kwargs)

    ocp.CheckpointManager.save = full_disk_save
