"""lmlab.classify: text classifiers with one estimator API (fit, predict, predict_proba, score).

Multinomial naive Bayes, L2 logistic/softmax regression over bag-of-words or TF-IDF, a CBOW
classifier (optionally initialised from word2vec) and a fastText-style hashed-bigram model.
Fine-tuning an lmlab encoder/decoder with a classification head belongs here too, as a
classification objective for the trainer (``lmlab.train``); ``heads.ClassificationHead`` is
the pooling + linear layer it will use.
"""

from .base import ClassifierMixin
from .cbow import CBOWClassifier
from .data import load_labeled, read_tsv
from .fasttext import FastTextClassifier
from .logistic import LogisticRegression
from .metrics import accuracy, confusion_matrix, macro_f1, report
from .naive_bayes import NaiveBayes
from .store import CLASSIFIERS, load_classifier, save_classifier

__all__ = ["CBOWClassifier", "CLASSIFIERS", "ClassifierMixin", "FastTextClassifier", "LogisticRegression",
           "NaiveBayes", "accuracy", "confusion_matrix", "load_classifier", "load_labeled", "macro_f1",
           "read_tsv", "report", "save_classifier"]
