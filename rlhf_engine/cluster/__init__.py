"""Past one machine: runs as Ray tasks on a cluster the user already runs, or on a local one (``--ray auto``).

``connect``: reaching the cluster (one line for an unreachable one or a refused token) and checking that every node
sees the workspace; ``placement``: what a task asks for (CPUs, a share of a GPU, memory), estimated as the room's
slots are; ``task``: what runs on the node (the run folder's job, its heartbeat, a stop asked through the folder,
a retry resuming from the checkpoint); ``ray_job``: the driver's side, a job with the interface of a local one, and
a failed task's reason written into its runs; ``dispatch``: a sweep's runs (one task each, or several side by side)
handed to the cluster and followed. Nothing outside this package imports Ray, and this package only when asked.
"""
