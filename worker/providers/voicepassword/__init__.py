"""VoicePassword: its adapter (adapter.py), the Voice-Password API it shares with MobilGroup
(api.py: the send handler both documents describe) and its `/get/` handler (get.py)."""
