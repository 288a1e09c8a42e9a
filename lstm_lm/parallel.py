"""Data parallelism with JAX's sharding: a 1-D mesh of devices along the axis "data".

The B rows (streams) of TF's batch layout are split across the devices: inputs
[N, B, T] and the carry (c, h) [L, B, H] are sharded along B, and each device holds
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


def put_rows(x_AxBxC: np.ndarray, mesh: Mesh) -> jax.Array:
    """A 3-D array whose axis 1 holds the B rows (batches [N, B, T], a carry half
    [L, B, H]), split along B."""
    return put(x_AxBxC, rows(mesh, 1, 3, x_AxBxC.shape[1]))


def put_carry(carry, mesh: Mesh):
    """(c, h), each [L, B, H], split along B."""
    return jax.tree.map(lambda a: put_rows(a, mesh), carry)


def to_host(x: jax.Array) -> np.ndarray:
    """The value of a replicated (or single-device) array on this process."""
    return np.asarray(x.addressable_data(0))
