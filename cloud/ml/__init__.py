"""Models and data for the labs: data sets, torch and Keras models, training, export for the edge, signed publishing. May import edge."""
