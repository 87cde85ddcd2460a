"""Fine-tuning as a service: uploaded files, a durable job queue, and the process that runs a job."""
