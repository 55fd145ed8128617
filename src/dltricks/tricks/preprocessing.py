"""Input preprocessing tricks: they act where the data is loaded (recipe keys under ``data``)."""

from dltricks.tricks.catalogue import trick

trick("standardize", "preprocessing",
      """Scale every input feature to mean 0 and std 1 with statistics of the training split only. Features
      in their own units (a price in thousands beside a ratio near 1) make the large ones dominate the
      first layer and the loss surface ill-conditioned; on tables it often decides between a model that
      learns and one that does not. On by default ("auto") for CSV and (N, F) npz data.""",
      {"data.standardize": True}, {"data.standardize": False},
      "LeCun, Bottou, Orr & Muller 1998, Efficient BackProp (Neural Networks: Tricks of the Trade), sec. 4.3; "
      "Ioffe & Szegedy 2015, Batch Normalization (arXiv:1502.03167), on why input scale matters")
