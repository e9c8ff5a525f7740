"""nd-humaneval: blind A/B human evaluation of dialogue systems (Table 4 of Negative Distillation).

* :mod:`.study`: sampling test queries and pairing the systems' responses into a study [create];
* :mod:`.store`: the study file (SQLite, WAL, one transaction per judgment);
* :mod:`.server`, :mod:`.page`: the annotation web server and its pages [serve];
* :mod:`.agreement`, :mod:`.report`: win / tie / lose, Fleiss' kappa, Markdown / JSON / PNG [report];
* :mod:`.judge`: an LLM on an OpenAI-compatible endpoint as one more annotator [judge];
* :mod:`.exchange`: CSV / JSON export and import [export, import].

Importing this package imports neither fairseq nor torch.
"""
