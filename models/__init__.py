"""Typed models for everything that crosses a boundary: broker events, control-plane
artifacts, Kubernetes resources, and the inputs and outputs of workflows and activities."""
