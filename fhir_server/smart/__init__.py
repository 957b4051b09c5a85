"""The SMART app side: EHR launch, the app's server-side sessions, the rating form's model and its submission."""
