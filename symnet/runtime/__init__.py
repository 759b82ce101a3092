"""The compiled model's runtime side: Model, training, optimizers, schedules,
history, stopping, targets, prediction and the MPI exchange."""
