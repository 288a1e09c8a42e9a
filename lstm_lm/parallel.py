"""Data parallelism with JAX's sharding: a 1-D mesh of devices along the axis "data".

The B rows (streams) of TF's batch layout are split across the devices: inputs
[N, B, T] and each layer's carry (c, h), [B, H] each, are sharded along B, and each device holds
whole rows, so the carry threading is what it is on one device. Parameters and
optimizer state are replicated; XLA adds the all-reduce of the gradients to the jitted
step. With several processes (`jax.distributed.initialize`), the mesh spans every
device of every process and each process transfers only the rows of its own devices.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"


def make_mesh(num_devices: int) -> Mesh:
    """A mesh over the first `num_devices` devices (0: all of them, of all processes)."""
    devices = jax.devices()
    return Mesh(np.array(devices[: num_devices or len(devices)]), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def rows(mesh: Mesh, batch_axis: int, ndim: int, batch_size: int) -> NamedSharding:
    """Sharding of an array whose axis `batch_axis` holds the B rows: split along it
    when B divides by the device count, else (an evaluation with batch 1, say) replicated."""
    if batch_size % mesh.size:
        return replicated(mesh)
    spec = [None] * ndim
    spec[batch_axis] = AXIS
    return NamedSharding(mesh, P(*spec))


def put(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from `x`, which every process holds in full; each process copies
    only the slices its own devices hold."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def put_rows(x_NxBxT: np.ndarray, mesh: Mesh) -> jax.Array:
    """Batches [N, B, T], split along their B rows."""
    return put(x_NxBxT, rows(mesh, 1, 3, x_NxBxT.shape[1]))


def carry_shardings(carry, mesh: Mesh):
    """A carry's shardings, leaf by leaf: each [B, H] array split along its B rows."""
    return jax.tree.map(lambda a: rows(mesh, 0, a.ndim, a.shape[0]), carry)


def put_carry(carry, mesh: Mesh):
    """The carry (any pytree of [B, H] arrays) split along B."""
    return jax.tree.map(put, carry, carry_shardings(carry, mesh))


def to_host(x: jax.Array) -> np.ndarray:
    """The value of a replicated (or single-device) array on this process."""
    return np.asarray(x.addressable_data(0))
