"""lmlab.classify: text classifiers with one estimator API (fit, predict, predict_proba, score).

Multinomial naive Bayes, L2 logistic/softmax regression over bag-of-words or TF-IDF, a CBOW
classifier (optionally initialised from word2vec), a fastText-style hashed-bigram model, and
``FineTunedClassifier``: any lmlab encoder or decoder + ``heads.ClassificationHead`` fine-tuned
by the one trainer (``lmlab.train``) with ``objective.ClassificationLoss``. ``calibrate`` measures
and fixes their confidence (ECE, Brier, temperature scaling) through ``lmlab.eval.calibration``.
"""

from .base import ClassifierMixin
from .cbow import CBOWClassifier
from .data import load_labeled, read_tsv
from .fasttext import FastTextClassifier
from .finetune import FineTunedClassifier
from .logistic import LogisticRegression
from .metrics import accuracy, confusion_matrix, macro_f1, report
from .naive_bayes import NaiveBayes
from .store import CLASSIFIERS, load_classifier, save_classifier

__all__ = ["CBOWClassifier", "CLASSIFIERS", "ClassifierMixin", "FastTextClassifier", "FineTunedClassifier",
           "LogisticRegression",
           "NaiveBayes", "accuracy", "confusion_matrix", "load_classifier", "load_labeled", "macro_f1",
           "read_tsv", "report", "save_classifier"]
