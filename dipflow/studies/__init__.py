"""Studies: cells and their instances, the batched solve, executors, the
store, statistics, plots, Figure 1 and the studies beyond it.

May import: `dipflow.training` and the layers below it; not `dipflow.imaging`."""
