"""The process around the reconciler: Kopf (the Builder watch, the event loop), the runner
that queues and coalesces passes, settings, liveness and leadership."""
