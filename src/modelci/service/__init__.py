"""What turns GitHub events into jobs and runs them: intake, polling, the job
queue, the evaluation and delivery services, the HTTP API and the server."""
