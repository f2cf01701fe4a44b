"""The observation vocabulary the client, rules, store and sinks share; imports nothing of ours."""
