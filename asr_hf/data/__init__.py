"""asr_hf.data"""
