"""Example workflows of the demo project, discovered at start-up by workflows_app.

Any installed app's ``workflows`` module is imported when Django starts, so the web
process and the workers know these workflows by name.
"""

from workflows_app.sdk import StepResponse, WorkflowResponse, create_step, create_workflow


@create_step("say-hello")
def say_hello(name, ctx):
    return StepResponse(f"Hello, {name or 'world'}!")


@create_workflow("hello-workflow", store=True, retention_time=99999)
def hello_workflow(input):
    greeting = say_hello(input["name"])
    return WorkflowResponse({"message": greeting})
