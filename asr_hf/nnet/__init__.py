"""asr_hf.nnet"""
