enum _PlaceholderAppSupport {}
