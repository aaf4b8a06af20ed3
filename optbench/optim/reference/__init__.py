"""optbench's own, readable implementations of optimizer update rules (`optimizer.impl=reference`).

One file per rule, the rule written as math right above the code that implements it. Each
matches its library counterpart (torch.optim, pytorch_optimizer) step for step; SGD also
offers the EMA and velocity conventions of momentum, and RMSprop Nesterov momentum.
"""

from optbench.optim.reference.adagrad import Adagrad
from optbench.optim.reference.adam import Adam, AdamW
from optbench.optim.reference.adopt import ADOPT
from optbench.optim.reference.cautious import CautiousAdamW
from optbench.optim.reference.lamb import Lamb
from optbench.optim.reference.lion import Lion
from optbench.optim.reference.rmsprop import RMSprop
from optbench.optim.reference.sgd import SGD

__all__ = ["ADOPT", "SGD", "Adagrad", "Adam", "AdamW", "CautiousAdamW", "Lamb", "Lion", "RMSprop"]
