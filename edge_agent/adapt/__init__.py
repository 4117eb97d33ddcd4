"""Run-time adaptation of a deployed model without retraining: the class mix the device sees (SMART, `prior`) and
variants chosen by context (AdaSpring, `context`, `selector`)."""
