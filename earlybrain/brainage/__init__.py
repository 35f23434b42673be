"""Brain age: regressors, uncertainty and normative growth models of brain volumes."""
